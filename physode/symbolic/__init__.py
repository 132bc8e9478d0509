"""Symbolic physical systems: SymPy forms, validation, torch code generation and invariants.

>>> import sympy
>>> from physode.symbolic import System
>>> x, v, k = sympy.symbols("x v k")
>>> osc = System.from_equations({x: v, v: -k * x}, {k: 1.0}, n_coordinates=1)
>>> osc.separable
True
"""

from __future__ import annotations

from physode.symbolic._codegen import compile_kernel, generate_source, supported_function_names
from physode.symbolic._spec import system_from_file, system_from_spec
from physode.symbolic._system import System
from physode.symbolic._vector_field import SystemVectorField

__all__ = [
    "System",
    "SystemVectorField",
    "compile_kernel",
    "generate_source",
    "supported_function_names",
    "system_from_file",
    "system_from_spec",
]
