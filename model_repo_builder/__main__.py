"""``python -m model_repo_builder``: same as the ``model-repo-builder`` console script."""

import sys

from .cli import main

sys.exit(main())
