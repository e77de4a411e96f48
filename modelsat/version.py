"""modelsat's version (also in pyproject.toml), in a module of its own: the commands read it without importing the
package's face (`modelsat.Router`), and a checkpoint records it (`modelsat.json`)."""
__version__ = "0.2.0"
