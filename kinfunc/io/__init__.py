"""File input/output: the only code that touches files."""

__all__: list[str] = []
