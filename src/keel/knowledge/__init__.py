"""The knowledge base: loaders, chunking, embeddings, Chroma + a catalog with its keyword index (SQLite
FTS5, or PostgreSQL for replicas), hybrid retrieval.

``KnowledgeBase`` is the entry point (``App.kb`` builds one); ``SearchHit`` and
``Retriever`` are the types the graph codes against.
"""

from .base import KnowledgeBase, SearchMode
from .demo import demo_documents
from .embedders import CachedEmbedder, Embedder, LocalEmbedder, ProviderEmbedder
from .ingest import FileError, IngestReport
from .loaders import Document, load_file
from .types import Retriever, SearchHit

__all__ = [
    "CachedEmbedder",
    "Document",
    "Embedder",
    "FileError",
    "IngestReport",
    "KnowledgeBase",
    "LocalEmbedder",
    "ProviderEmbedder",
    "Retriever",
    "SearchHit",
    "SearchMode",
    "demo_documents",
    "load_file",
]
