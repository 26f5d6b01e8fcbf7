"""Start the dashboard: `python -m ui.serve [streamlit options]` (what `make run` uses).

Why not plain `streamlit run app.py`: Streamlit treats a `pages/` folder beside the entrypoint as a legacy
multipage app until some session has run `st.navigation`. On a fresh server the first visitor of a deep link such
as /data-connections would then get a "Page not found" dialog. Our `pages/` holds `st.navigation` pages, so the
launcher tells Streamlit so before the server starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from streamlit.runtime.pages_manager import PagesManager
from streamlit.web import cli

from core.actors import SIGNED_OUT, set_process_actor
from core.store.private_files import private_umask

APP = Path(__file__).resolve().parents[1] / "app.py"


def main(argv: list[str]) -> int:
    PagesManager.uses_pages_directory = False
    set_process_actor(SIGNED_OUT)  # a page run acts as its user (app.py); anything outside one may not write
    private_umask()  # the dashboard creates the database on a first start, and its WAL on every write
    sys.argv = ["streamlit", "run", str(APP), *argv]
    return int(cli.main() or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
