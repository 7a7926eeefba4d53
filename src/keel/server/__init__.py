"""keel's HTTP server: the API of DESIGN.md §4, an OpenAI-compatible endpoint and the web UI.

    create_app(app)        the FastAPI application around one keel.App
    serve(app, host, port) run it with uvicorn (refuses a network address without API keys)
    KeyStore               API keys, stored as salted hashes; `keel keys create|revoke|list`
"""

from ._app import create_app
from ._keys import ApiKey, KeyStore
from ._serve import serve

__all__ = ["ApiKey", "KeyStore", "create_app", "serve"]
