"""The verifier's parts, one job each; ``binslim.verifier`` is their front (see its docstring)."""
