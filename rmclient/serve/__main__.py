"""``python -m rmclient.serve MODEL [...]``."""

from .cli import main

raise SystemExit(main())
