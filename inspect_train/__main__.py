import sys

from inspect_train.cli import main

sys.exit(main())
