"""``python -m keras_trpo.cli``: the same as the ``keras-trpo`` command."""

import sys

from keras_trpo.cli import main

sys.exit(main())
