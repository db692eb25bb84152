"""`python -m core.serve --bind ADDRESS --port N`: `jobmon serve --detach`'s server (see core/serve/main.py)."""
import sys

from core.serve.main import main

sys.exit(main(sys.argv[1:]))
