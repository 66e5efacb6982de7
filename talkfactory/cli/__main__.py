"""``python -m talkfactory.cli``: the same as the ``talkfactory`` entry point."""

import sys

from talkfactory.cli.main import main

sys.exit(main())
