"""`python -m toydiff.bridge {digits,fashion}-{train,table} ...`: the same commands as
`python -m toydiff bridge digits-*` (the top-level command line routes only digits-* here)."""

import sys

from .cli import dataset_main

sys.exit(dataset_main(sys.argv[1:], "python -m toydiff.bridge"))
