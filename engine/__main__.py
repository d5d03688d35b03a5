"""python -m cytask: the command line (see cytask._cli)."""

from cytask._cli import main

raise SystemExit(main())
