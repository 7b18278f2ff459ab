import sys

from sparse_transformer.cli import main

sys.exit(main())
