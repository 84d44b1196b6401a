"""iii_trio: a trio-native SDK for the iii engine."""

from ._version import __version__ as __version__
