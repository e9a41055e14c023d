"""covr's version, in a module of its own so that covr's modules can read it without importing the
package root (whose `covr.load` reaches the loaders, and would close an import circle)."""

__version__ = "0.1.0"
