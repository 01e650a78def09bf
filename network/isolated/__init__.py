"""The isolated methods, a model per task: one module per method (or per method with its variants), each declaring
its spec next to its layers and registering it. Importing this package, as importing ``network`` does, imports every
module in it, so a new method is one new file here; no list names it."""
from network.methods import discover

discover(__name__, __path__)
