"""``python -m keras_trpo_command``: the ``keras-trpo`` command."""

import sys

from keras_trpo_command import main

sys.exit(main())
