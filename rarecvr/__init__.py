"""rarecvr: streaming online learning of post-click CVR for rare conversions.

This package is the shared vocabulary of the stages (event contracts, topics, settings) and the
``rarecvr`` command line. It imports no stage; each stage imports from it.
"""

__version__ = "0.1.0"
