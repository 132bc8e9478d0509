"""``System``: a physical system from a Lagrangian, a Hamiltonian or first-order equations.

The three constructors hand their input to the builders of ``_forms.py``, which validate it
(collecting every problem into one :class:`physode.SystemDefinitionError`) and derive the
equations of motion and the energy with SymPy; a system keeps everything symbolic, and its torch
code is generated on first use and cached.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy
import torch

from physode._checks import is_int
from physode._errors import InvalidArgumentError
from physode._repr import never_raising
from physode.symbolic import _mechanics
from physode.symbolic._codegen import (
    generate_sources,
    load_kernel,
)
from physode.symbolic._names import warn_constants
from physode.symbolic._sampling import Context, Distribution
from physode.symbolic._validation import Problems, SymbolLike


class _Symbolic:
    """An attribute of :class:`System` holding SymPy expressions, loaded on first use after
    unpickling (from the ``_symbolic`` blob that ``System.__getstate__`` writes).

    A data descriptor rather than a ``__getattr__`` fallback: Python also calls ``__getattr__``
    when a cached property raises AttributeError while it computes, which would hide that error
    behind "no attribute".
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, system: System | None, owner: type | None = None) -> Any:
        if system is None:
            return self
        values = system.__dict__
        if self.name not in values:
            blob = values.pop("_symbolic", None)
            if blob is None:
                raise AttributeError(f"'System' object has no attribute {self.name!r}")
            values.update(pickle.loads(blob))
        return values[self.name]

    def __set__(self, system: System, value: Any) -> None:
        system.__dict__[self.name] = value


class System:
    """A physical system: equations of motion, parameters, invariants, initial states.

    Build one with :meth:`from_lagrangian`, :meth:`from_hamiltonian`, :meth:`from_equations`, or
    load a specification file with :func:`physode.systems.load`. The state is a float tensor of
    shape ``(..., n_state)`` ordered as :attr:`state_names`; parameters are ordered as
    :attr:`parameters`.

    Examples
    --------
    >>> import sympy, torch
    >>> q, p, k = sympy.symbols("q p k")
    >>> osc = System.from_hamiltonian(p**2 / 2 + k * q**2 / 2, [q], [p], {k: 4.0})
    >>> osc.state_names, osc.parameters
    (['q', 'p'], {'k': 4.0})
    >>> osc.rhs(0.0, torch.tensor([1.0, 0.0]))
    tensor([ 0., -4.])
    >>> osc.invariants(torch.tensor([1.0, 0.0]))["energy"]
    tensor(2.)
    """

    def __init__(
        self,
        *,
        name: str,
        form: str,
        states: Sequence[sympy.Symbol],
        parameter_symbols: Sequence[sympy.Symbol],
        parameter_values: Sequence[float],
        parameter_ranges: Sequence[tuple[float, float]],
        time: sympy.Symbol,
        equations: Sequence[sympy.Expr] | None,
        dynamics: _mechanics.LagrangianDynamics | None,
        energy: sympy.Expr | None,
        conservative: bool,
        invariants: Mapping[str, sympy.Expr],
        n_coordinates: int | None,
        separable: bool,
        distribution: Distribution | Callable | None,
        initial_states: Mapping[str, Sequence[float]],
        description: str = "",
        reference: str = "",
        characteristic_time: float | None = None,
        dissipation: sympy.Expr | None = None,
        forces: Sequence[sympy.Expr] | None = None,
        defining_expression: sympy.Expr | None = None,
        mass_matrix_mode: str = "auto",
        distribution_table: Mapping[str, Any] | None = None,
    ):
        self.name = name
        self.form = form
        self.description = description
        self.reference = reference
        self._spec_text: str | None = None  # set by the specification loader only
        self.time_symbol = time
        self.state_symbols = list(states)
        self.parameter_symbols = list(parameter_symbols)
        self._values = [float(v) for v in parameter_values]
        self._ranges = [tuple(map(float, r)) for r in parameter_ranges]
        self._equations = None if equations is None else list(equations)
        self._dynamics = dynamics
        # Small facts about the expressions, kept apart so that numerics never need the
        # expressions themselves (which an unpickled system loads only on demand).
        self._explicit = equations is not None
        self._has_energy = energy is not None
        self._invariant_names = list(invariants)
        self.energy_expression = energy
        self.conservative = conservative
        self.invariant_expressions = dict(invariants)
        self.n_coordinates = n_coordinates
        self.separable = separable
        self._distribution = distribution
        self._named_states = {k: [float(x) for x in v] for k, v in initial_states.items()}
        self.characteristic_time = characteristic_time
        self.dissipation = dissipation
        self.forces = None if forces is None else list(forces)
        # What the constructor was given beyond the derived equations, for to_spec: the
        # Lagrangian or Hamiltonian itself (None for equations), how the accelerations are
        # solved, and the initial-state distribution as its table (None: none, or a callable).
        self._defining_expression = defining_expression
        self._mass_matrix_mode = mass_matrix_mode
        self._distribution_table = distribution_table

    # ------------------------------------------------------------------ descriptive attributes
    @property
    def spec_text(self) -> str | None:
        """The text of the specification file this system was loaded from; None for a system
        built in Python.

        Read-only: a data set stores this text to rebuild the system, so it must be the text the
        system was derived from. :meth:`to_spec` writes a system built in Python as such a text
        (which :func:`physode.data.simulate` stores for it).
        """
        return self._spec_text

    def to_spec(self) -> str:
        """The system as the text of a specification file (TOML, see ``docs/systems.md``).

        For a system loaded from a file, that file's text (:attr:`spec_text`) unchanged. For one
        built in Python, the text written from what its constructor was given: the Lagrangian
        (with its dissipation, forces and ``mass_matrix`` mode), the Hamiltonian or the
        equations, the coordinates and velocities or momenta, the parameters with their values
        and ranges, the declared invariants, the initial-state distribution and named states,
        the time symbol, the time scale, the name, description and reference. Loading the text
        (:func:`physode.systems.load`) gives the same equations, invariants and parameters.
        Symbols are written by name: SymPy assumptions (``real=True``) are not kept.

        Raises
        ------
        physode.InvalidArgumentError
            When the system holds what a file cannot: a callable initial-state distribution, a
            name that is a Python keyword (``lambda``), a name that is also a function the
            system calls; the message says which.

        Examples
        --------
        >>> import sympy
        >>> x, k = sympy.symbols("x k")
        >>> decay = System.from_equations({x: -k * x}, {k: 0.5}, name="decay")
        >>> print(decay.to_spec())
        name = "decay"
        form = "equations"
        <BLANKLINE>
        [parameters]
        k = { value = 0.5 }
        <BLANKLINE>
        [equations]
        x = "-k*x"
        <BLANKLINE>
        """
        from physode.symbolic._writing import spec_text

        return spec_text(self)

    def write_spec(self, path: Any) -> Any:
        """Write :meth:`to_spec` to the file ``path`` (UTF-8); returns its ``pathlib.Path``.

        The text goes to a temporary file beside ``path``, renamed once complete, so a write
        that fails (a full disk, Ctrl-C) leaves an existing ``path`` as it was; missing folders
        are created. A write the system refuses raises ``physode.InvalidArgumentError`` naming
        ``path`` and the reason.

        Examples
        --------
        >>> import sympy, tempfile, physode
        >>> x, k = sympy.symbols("x k")
        >>> decay = System.from_equations({x: -k * x}, {k: 0.5}, name="decay")
        >>> path = decay.write_spec(tempfile.mkdtemp() + "/decay.toml")
        >>> physode.systems.load(path).equations
        {'x': -k*x}
        """
        from physode._files import write_atomically

        text = self.to_spec()
        return write_atomically(
            path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "specification file"
        )

    @spec_text.setter
    def spec_text(self, value: Any) -> None:
        raise AttributeError(
            f"spec_text of {self.name!r} is read-only: it is the text of the specification file "
            "the system was derived from (None for a system built in Python); to_spec() writes a "
            "system built in Python as such a text"
        )

    @property
    def state_names(self) -> list[str]:
        """Names of the state components, in order."""
        return [s.name for s in self.state_symbols]

    @property
    def parameters(self) -> dict[str, float]:
        """Default parameter values, in the system's fixed order."""
        return {s.name: v for s, v in zip(self.parameter_symbols, self._values, strict=True)}

    @property
    def parameter_ranges(self) -> dict[str, tuple[float, float]]:
        """Sampling range of every parameter; ``(v, v)`` for one that is held fixed."""
        return {s.name: r for s, r in zip(self.parameter_symbols, self._ranges, strict=True)}

    @property
    def n_state(self) -> int:
        """Number of state components."""
        return len(self.state_symbols)

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return len(self.parameter_symbols)

    @property
    def coordinate_names(self) -> list[str] | None:
        """The first ``n_coordinates`` state names (the generalized coordinates), if any."""
        return None if self.n_coordinates is None else self.state_names[: self.n_coordinates]

    @property
    def invariant_names(self) -> list[str]:
        """Names of the conserved quantities that :meth:`invariants` returns."""
        return list(self._invariant_names)

    @property
    def initial_states(self) -> dict[str, torch.Tensor]:
        """Named initial states (e.g. ``"figure_eight"``), float64 tensors of shape (n_state,)."""
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in self._named_states.items()}

    @property
    def equations(self) -> dict[str, sympy.Expr]:
        """``dy/dt`` for each state as SymPy expressions.

        For a mass matrix solved numerically the accelerations are ``M^-1 F`` (see
        :attr:`mass_matrix`, :attr:`forcing`); they are shown here solved by LU on demand.
        """
        eqs = self._equations
        if eqs is None:
            n = self.n_coordinates
            acc = self._dynamics.mass_matrix.LUsolve(self._dynamics.forcing)
            eqs = list(self.state_symbols[n:]) + [acc[i] for i in range(n)]
        return dict(zip(self.state_names, eqs, strict=True))

    @property
    def mass_matrix(self) -> sympy.Matrix | None:
        """The Lagrangian mass matrix ``d2L/dv2`` (None for other forms)."""
        return None if self._dynamics is None else self._dynamics.mass_matrix

    @property
    def forcing(self) -> sympy.Matrix | None:
        """Right-hand side ``F`` of ``M a = F`` (None for other forms)."""
        return None if self._dynamics is None else self._dynamics.forcing

    @functools.cached_property
    def time_dependent(self) -> bool:
        """Whether the equations of motion contain the time symbol (a forced system).

        Worked out by :meth:`compile`, so that a system loaded from the derivation cache answers
        without opening its SymPy expressions.

        >>> import physode
        >>> [physode.systems.load(name).time_dependent for name in ("duffing", "pendulum")]
        [True, False]
        """
        return self.time_symbol in self._equation_symbols()

    @functools.cached_property
    def parameters_in_equations(self) -> tuple[str, ...]:
        """The parameters that the equations of motion contain, in the system's order.

        A parameter missing here (the pendulum's ``m``, which cancels from ``dy/dt``) changes no
        solve: learning it gives a zero gradient. It may still appear in the invariants (the
        pendulum's energy). Worked out by :meth:`compile`, like :attr:`time_dependent`. Where
        ``M a = F`` is solved numerically (the ``mass_matrix`` option) it reads ``M``
        and ``F``, in which a parameter may appear and still cancel from ``M^-1 F``.

        >>> import physode
        >>> physode.systems.load("pendulum").parameters_in_equations
        ('g', 'l')
        """
        symbols = self._equation_symbols()
        return tuple(s.name for s in self.parameter_symbols if s in symbols)

    def _equation_symbols(self) -> set:
        """Every symbol the equations of motion contain (those of ``M`` and ``F`` where the
        accelerations are solved numerically: a superset)."""
        if self._equations is None:  # read M and F rather than solve M a = F symbolically
            expressions = [*self.mass_matrix, *self.forcing]
        else:
            expressions = self._equations
        return set().union(*(sympy.sympify(e).free_symbols for e in expressions))

    @never_raising
    def __repr__(self) -> str:
        return (
            f"System({self.name!r}, form={self.form!r}, states={self.state_names}, "
            f"parameters={self.parameters})"
        )

    _KERNELS = ("_rhs_kernel", "_invariant_kernels", "_energy_kernel")

    # The SymPy expressions: pickled as one blob that an unpickled system opens on first use.
    # Building them costs SymPy far more than the numerics, which need only the generated code.
    _equations = _Symbolic()
    _dynamics = _Symbolic()
    energy_expression = _Symbolic()
    invariant_expressions = _Symbolic()
    dissipation = _Symbolic()
    forces = _Symbolic()
    _defining_expression = _Symbolic()
    _SYMBOLIC = (
        "_equations", "_dynamics", "energy_expression", "invariant_expressions", "dissipation",
        "forces", "_defining_expression",
    )

    def __getstate__(self) -> dict[str, Any]:
        # Compiled kernels are not picklable; their generated sources are, and rebuild them on
        # first use without SymPy (physode.symbolic._cache keeps derived systems on disk).
        state = {
            k: v
            for k, v in self.__dict__.items()
            if k not in self._KERNELS and k not in self._SYMBOLIC
        }
        if "_symbolic" not in state:
            symbolic = {k: self.__dict__[k] for k in self._SYMBOLIC}
            state["_symbolic"] = pickle.dumps(symbolic, protocol=pickle.HIGHEST_PROTOCOL)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _kernel(self, name: str, outputs: Callable[[], Mapping[str, sympy.Expr]]):
        """The compiled kernel ``name`` of ``outputs()`` (label -> expression, the labels naming
        the outputs in errors), generating its code only once."""
        sources = self.__dict__.setdefault("_kernel_sources", {})
        if name not in sources:
            out = outputs()
            sources[name] = generate_sources(
                list(out.values()), self.state_symbols, self.parameter_symbols, self.time_symbol,
                name, labels=list(out),
            )
        return load_kernel(sources[name])

    def compile(self) -> System:
        """Generate the code that simulating and checking data need now rather than on first use.

        Returns the system itself. :func:`physode.systems.load` does this before caching a
        derived system on disk.
        """
        self._rhs_kernel  # noqa: B018 (cached properties build on access)
        self.time_dependent  # noqa: B018
        self.parameters_in_equations  # noqa: B018
        if self.invariant_names:
            self._invariant_kernels  # noqa: B018
        return self

    # ------------------------------------------------------------------ numerics
    def default_parameters(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """The default parameters as a tensor of shape (n_params,) (dtype/device of ``like``).

        Examples
        --------
        >>> import physode
        >>> physode.systems.load("pendulum").default_parameters()
        tensor([1.0000, 9.8100, 1.0000], dtype=torch.float64)
        """
        dtype = torch.float64 if like is None else like.dtype
        device = None if like is None else like.device
        return torch.tensor(self._values, dtype=dtype, device=device)

    def _numbers_as_tensor(self, p: list | tuple | np.ndarray, y: torch.Tensor) -> torch.Tensor:
        """``p`` given as a list, tuple or NumPy array of real numbers, as a tensor with ``y``'s
        dtype and device (read in float64 first: ``[9.81]`` is not rounded to float32)."""
        try:
            values = np.asarray(p)
        except (TypeError, ValueError, RuntimeError):  # ragged rows, a tensor that needs grad
            values = None
        if values is None or values.dtype.kind not in "iuf":
            raise InvalidArgumentError(
                f"p={p!r} is not a tensor or a list of real numbers; {self.name} needs "
                f"(..., {self.n_params}) values of its parameters {list(self.parameters)}, e.g. "
                f"{[float(v) for v in self._values]} or system.default_parameters()"
            )
        return torch.as_tensor(values, dtype=y.dtype, device=y.device)

    def _real_parameters(self, p, like: torch.Tensor) -> torch.Tensor:
        """``p`` as a tensor of real numbers (numbers given as a list, tuple or NumPy array take
        ``like``'s dtype and device); refuse anything else, naming it."""
        if isinstance(p, list | tuple | np.ndarray):
            p = self._numbers_as_tensor(p, like)
        if not isinstance(p, torch.Tensor):
            raise InvalidArgumentError(
                f"p is a {type(p).__name__}; {self.name} needs a tensor or a list of numbers "
                f"(..., {self.n_params}) with parameters {list(self.parameters)}"
            )
        if p.is_complex() or p.dtype == torch.bool:
            raise InvalidArgumentError(
                f"p has dtype {p.dtype}; the parameters {list(self.parameters)} of {self.name} "
                "are real numbers, e.g. system.default_parameters()"
            )
        return p

    def _inputs(self, y: torch.Tensor, p: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(y, torch.Tensor):
            raise InvalidArgumentError(f"y must be a torch.Tensor, got {type(y).__name__}")
        if y.shape[-1:] != (self.n_state,):
            raise InvalidArgumentError(
                f"y has shape {tuple(y.shape)}; {self.name} needs (..., {self.n_state}) with "
                f"states {self.state_names}"
            )
        if not y.is_floating_point():
            # The defaults would be cast to y's dtype: an integer state would truncate g = 9.81
            # to 9 and give wrong numbers without a word.
            raise InvalidArgumentError(
                f"y has dtype {y.dtype}; {self.name} needs a floating-point state, e.g. "
                "torch.tensor([1.0, 0.0]) rather than torch.tensor([1, 0]), or y.double()"
            )
        if p is None:
            return y, self.default_parameters(y)
        p = self._real_parameters(p, y)
        if p.shape[-1:] != (self.n_params,):
            raise InvalidArgumentError(
                f"p has shape {tuple(p.shape)}; {self.name} needs a tensor or a list of numbers "
                f"(..., {self.n_params}) with parameters {list(self.parameters)}"
            )
        try:
            if p.dim() > 1 and p.shape[:-1] != y.shape[:-1]:
                # NumPy's: torch's imports its symbolic-shapes machinery on first use.
                np.broadcast_shapes(y.shape[:-1], p.shape[:-1])
        except ValueError:
            raise InvalidArgumentError(
                f"p has shape {tuple(p.shape)}, whose batch shape {tuple(p.shape[:-1])} does not "
                f"broadcast against the batch shape {tuple(y.shape[:-1])} of y "
                f"{tuple(y.shape)}; give one parameter row per state or one for all"
            ) from None
        # Like the defaults, p takes y's dtype and device: the result's dtype is then y's
        # whatever p's shape (mixed dtypes promoted only where p has a batch dimension).
        if p.dtype != y.dtype or p.device != y.device:
            p = p.to(dtype=y.dtype, device=y.device)
        return y, p

    @functools.cached_property
    def _rhs_kernel(self):
        def outputs():
            names = self.state_names
            if self._equations is not None:
                return {f"the equation for {s}": e for s, e in zip(names, self._equations)}
            n = self.n_coordinates
            dyn = self._dynamics
            out = {f"the equation for {s}": v for s, v in zip(names, self.state_symbols[n:])}
            out.update({
                f"the mass matrix entry ({names[i]}, {names[j]})": dyn.mass_matrix[i, j]
                for i in range(n) for j in range(n)
            })
            out.update({f"the forcing on {names[i]}": dyn.forcing[i] for i in range(n)})
            return out

        return self._kernel("rhs", outputs)

    @property
    def exactly_rounded(self) -> bool:
        """Whether :meth:`rhs` uses exactly rounded operations only (arithmetic, ``abs``, ...).

        Such a system gives each row of a batch the same bits whatever batch or code path
        evaluates it, and without gradients its right-hand side runs as NumPy code, several times
        faster on small batches (see :func:`physode.symbolic.compile_kernel`). Functions such as
        ``sin`` or ``sqrt`` and a mass matrix to solve make it false.

        Examples
        --------
        >>> import physode
        >>> physode.systems.load("three_body").exactly_rounded
        True
        >>> physode.systems.load("pendulum").exactly_rounded
        False
        """
        return self._explicit and self._rhs_kernel.numpy_source is not None

    @property
    def rhs_numpy(self):
        """:meth:`rhs` as a function of NumPy arrays, ``(t, y, p) -> dy/dt``, or None.

        Available where the system is :attr:`exactly_rounded` (with the same bits as
        :meth:`rhs`). All three arguments are required and share one floating dtype; ``t`` is
        0-dim or one time per row, as for :meth:`rhs`. Division by zero produces inf or NaN
        with NumPy's usual warnings. Vector fields built on it let per-sample solves without
        gradients run on NumPy (see :func:`physode.solve`).

        Examples
        --------
        >>> import numpy as np, physode
        >>> osc = physode.systems.load("harmonic_oscillator")
        >>> p = np.array(list(osc.parameters.values()))
        >>> osc.rhs_numpy(np.array(0.0), np.array([[1.0, 0.0]]), p).shape
        (1, 2)
        """
        return self._rhs_kernel.numpy if self.exactly_rounded else None

    def rhs(self, t: torch.Tensor | float, y: torch.Tensor, p: torch.Tensor | None = None):
        """The time derivative ``dy/dt``: a pure function of time, state and parameters.

        Parameters
        ----------
        t : tensor or float
            Time: 0-dim, or one time per row shaped ``(batch,) + (1,) * (y.ndim - 1)``; cast
            to the dtype of ``y``.
        y : torch.Tensor
            State, shape ``(..., n_state)``.
        p : torch.Tensor, list of float, optional
            Parameters, shape ``(..., n_params)`` broadcastable against ``y[..., 0]``, real;
            cast to the dtype and device of ``y`` (a list, tuple or NumPy array of numbers too).
            The defaults when omitted.

        Returns
        -------
        torch.Tensor
            Shape ``(..., n_state)`` (the broadcast batch shape of ``y`` and ``p``), dtype of
            ``y``.

        Raises
        ------
        physode.InvalidArgumentError
            When ``y`` is not a floating-point tensor ``(..., n_state)``, or ``p`` not a real
            tensor ``(..., n_params)`` whose batch shape broadcasts against that of ``y``.

        Examples
        --------
        >>> import physode, torch
        >>> pend = physode.systems.load("pendulum")
        >>> pend.rhs(0.0, torch.tensor([0.5, 1.0], dtype=torch.float64))
        tensor([ 1.0000, -4.7032], dtype=torch.float64)
        """
        y, p = self._inputs(y, p)
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        elif t.dtype != y.dtype:  # a float64 time per row would promote a float32 result
            t = t.to(y.dtype)
        out = self._rhs_kernel(t, y, p)
        if self._explicit:
            return out
        n = self.n_coordinates
        mass = out[..., n : n + n * n].unflatten(-1, (n, n))
        acc = torch.linalg.solve(mass, out[..., n + n * n :].unsqueeze(-1)).squeeze(-1)
        return torch.cat((out[..., :n], acc), dim=-1)

    @functools.cached_property
    def _invariant_kernels(self):
        def exprs():
            return {f"invariant {k!r}": self.invariant_expressions[k] for k in self.invariant_names}

        def scales():
            # One Add of all terms: adding them one by one re-sorts a growing sum each time.
            return {
                f"the scale of {label}": sympy.Add(
                    *(abs(term) for term in sympy.Add.make_args(sympy.expand_mul(e)))
                )
                for label, e in exprs().items()
            }

        return self._kernel("invariants", exprs), self._kernel("scales", scales)

    def _evaluate_invariants(self, y, p, which: int) -> dict[str, torch.Tensor]:
        y, p = self._inputs(y, p)
        if not self.invariant_names:
            return {}
        out = self._invariant_kernels[which](y.new_zeros(()), y, p)
        return {name: out[..., i] for i, name in enumerate(self.invariant_names)}

    def invariants(self, y: torch.Tensor, p: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The conserved quantities at the states ``y``.

        Energy (``"energy"``) is included for every time-independent conservative system: the
        Hamiltonian, or ``sum_i v_i dL/dv_i - L``. Declared invariants (momentum components,
        angular momentum, any expression) follow in their declared order.

        Parameters
        ----------
        y : torch.Tensor
            States, shape ``(..., n_state)``.
        p : torch.Tensor, optional
            Parameters ``(..., n_params)``; defaults when omitted.

        Returns
        -------
        dict of str to torch.Tensor
            Each of shape ``y.shape[:-1]`` (broadcast with ``p``).

        Examples
        --------
        >>> import physode
        >>> kep = physode.systems.load("kepler")
        >>> sorted(kep.invariants(kep.initial_state()))
        ['angular_momentum', 'energy', 'lrl_x', 'lrl_y']
        """
        return self._evaluate_invariants(y, p, 0)

    def invariant_scales(
        self, y: torch.Tensor, p: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The magnitude each invariant is compared with: the sum of its terms' absolute values.

        For an invariant written as a sum of terms ``I = sum_k T_k`` (after multiplying out
        products of sums; powers of sums such as ``(x - y)**2`` stay one term),
        the scale is ``sum_k |T_k|``: kinetic plus absolute potential energy, the sum of the
        bodies' momentum magnitudes per component, and so on. It is never smaller than ``|I|``
        and stays positive when ``I`` itself is zero by cancellation (zero total momentum); it is
        zero only where every term vanishes.

        Examples
        --------
        >>> import physode, torch
        >>> osc = physode.systems.load("harmonic_oscillator")
        >>> osc.invariant_scales(torch.tensor([1.0, 1.0], dtype=torch.float64))["energy"]
        tensor(1., dtype=torch.float64)
        """
        return self._evaluate_invariants(y, p, 1)

    @functools.cached_property
    def _energy_kernel(self):
        return self._kernel("energy", lambda: {"the energy": self.energy_expression})

    def energy(self, y: torch.Tensor, p: torch.Tensor | None = None) -> torch.Tensor:
        """The energy: ``sum_i v_i dL/dv_i - L`` of a Lagrangian, the Hamiltonian, or the
        declared ``energy`` invariant of equations; also where dissipation or generalized
        ``forces`` (a drive ``Q(t)`` included) make it change.

        Raises
        ------
        physode.InvalidArgumentError
            When the system has none: first-order equations without a declared ``energy``
            invariant, or a Lagrangian or Hamiltonian that depends on time explicitly (its
            energy function would depend on time too, and this method takes none; write a
            drive as a generalized force instead, which leaves ``L`` or ``H`` free of time).

        Examples
        --------
        >>> import physode, torch
        >>> dp = physode.systems.load("damped_pendulum")
        >>> float(dp.energy(torch.tensor([0.0, 2.0], dtype=torch.float64)))  # doctest: +ELLIPSIS
        0.903...
        """
        if not self._has_energy:
            raise InvalidArgumentError(self._no_energy_reason())
        y, p = self._inputs(y, p)
        return self._energy_kernel(y.new_zeros(()), y, p)[..., 0]

    def _no_energy_reason(self) -> str:
        """Why :meth:`energy` is not available, and how to make it so."""
        t = self.time_symbol.name
        if self.form == "equations":
            return (
                f"{self.name} has no energy function: equations have one only where they declare "
                "an 'energy' invariant (invariants={'energy': ...}, or energy = \"...\" under "
                "[invariants] in a file)"
            )
        if self.form == "lagrangian":
            what, energy, rate = "Lagrangian", "sum_i v_i dL/dv_i - L", f"-∂L/∂{t}"
        else:
            what, energy, rate = "Hamiltonian", "H", f"∂H/∂{t}"
        return (
            f"{self.name} has no energy function: its {what} depends on time {t!r} explicitly, "
            f"so its energy function {energy} depends on {t!r} as well and is not conserved (it "
            f"changes at the rate {rate}); energy(y, p) takes no time. A drive written as a "
            f"generalized force (forces={{q: Q({t})}}, or [forces] in a file) leaves the {what} "
            "free of time and the energy available"
        )

    def vector_field(
        self,
        learnable: Sequence[str] = (),
        values: Mapping[str, float] | None = None,
        parameters_in_state: bool = False,
    ):
        """The system as an ``nn.Module`` ``f(t, y)`` for the solver layer.

        Parameters
        ----------
        learnable : iterable of str
            Parameters to make ``nn.Parameter``s (named as in the system, or their SymPy
            symbols); the others are buffers. Any iterable, a generator too, read once.
        values : mapping of str to float, optional
            Initial values overriding the defaults (e.g. a wrong guess to train from).
        parameters_in_state : bool
            If True, ``f`` takes ``y`` of shape ``(..., n_state + n_params)``: the state followed
            by per-trajectory parameters, whose derivative is zero (how simulations carry one
            parameter set per trajectory through a per-sample solve). The module's own
            parameters are then unused.

        Returns
        -------
        physode.symbolic.SystemVectorField
            ``separable`` and ``n_coordinates`` tell the symplectic integrators how the state
            splits.

        Examples
        --------
        >>> import physode
        >>> f = physode.systems.load("three_body").vector_field(learnable=["m1", "m2", "m3"])
        >>> sorted(name for name, _ in f.named_parameters())
        ['m1', 'm2', 'm3']
        """
        from physode.symbolic._vector_field import SystemVectorField

        return SystemVectorField(
            self, learnable=learnable, values=values, parameters_in_state=parameters_in_state
        )

    # ------------------------------------------------------------------ sampling
    def initial_state(self, name: str | None = None) -> torch.Tensor:
        """A named initial state (the first one listed when ``name`` is None), float64.

        Raises
        ------
        physode.InvalidArgumentError
            When the name is unknown (the message lists the named states).
        """
        if not self._named_states:
            raise InvalidArgumentError(f"{self.name} has no named initial states")
        if name is None:
            name = next(iter(self._named_states))
        if name not in self._named_states:
            raise InvalidArgumentError(
                f"{self.name} has no initial state {name!r}; named states: "
                f"{', '.join(self._named_states)}"
            )
        return torch.tensor(self._named_states[name], dtype=torch.float64)

    def sample_parameters(self, n: int, seed: int = 0) -> torch.Tensor:
        """Draw parameters uniformly from :attr:`parameter_ranges`.

        Returns
        -------
        torch.Tensor
            float64, shape ``(n, n_params)``.

        Examples
        --------
        >>> import physode
        >>> physode.systems.load("pendulum").sample_parameters(4, seed=1).shape
        torch.Size([4, 3])
        """
        n = _check_count(n)
        gen = _generator(seed)
        lo = torch.tensor([r[0] for r in self._ranges], dtype=torch.float64)
        hi = torch.tensor([r[1] for r in self._ranges], dtype=torch.float64)
        return lo + (hi - lo) * torch.rand(n, self.n_params, generator=gen, dtype=torch.float64)

    def sample_initial_states(
        self, n: int, seed: int = 0, p: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Draw initial states from the system's own distribution.

        Parameters
        ----------
        n : int
            Number of states.
        seed : int
            Seed of the private generator; the same seed gives the same states.
        p : torch.Tensor, optional
            Per-sample parameters ``(n, n_params)`` for distributions that depend on them (the
            orbital ones use the masses and G), or one row for all, ``(n_params,)`` or
            ``(1, n_params)``; the defaults when omitted.

        Returns
        -------
        torch.Tensor
            float64, shape ``(n, n_state)``.

        Examples
        --------
        >>> import physode
        >>> y0 = physode.systems.load("three_body").sample_initial_states(8, seed=0)
        >>> y0.shape
        torch.Size([8, 12])
        """
        n = _check_count(n)
        gen = _generator(seed)
        if p is None:
            p = self.default_parameters().expand(n, self.n_params)
        else:
            p = self._real_parameters(p, torch.empty(0, dtype=torch.float64)).double()
            if p.shape not in ((self.n_params,), (1, self.n_params), (n, self.n_params)):
                raise InvalidArgumentError(
                    f"p has shape {tuple(p.shape)}; give ({self.n_params},) or "
                    f"(1, {self.n_params}) for every sample, or ({n}, {self.n_params}), for "
                    f"parameters {list(self.parameters)}"
                )
            p = p.expand(n, self.n_params)
        dist = self._distribution
        if dist is None:
            return 2 * torch.rand(n, self.n_state, generator=gen, dtype=torch.float64) - 1
        if callable(dist) and not hasattr(dist, "sample"):
            out = torch.as_tensor(dist(n, gen), dtype=torch.float64)
            if out.shape != (n, self.n_state):
                raise InvalidArgumentError(
                    f"the initial-state sampler of {self.name} returned shape {tuple(out.shape)}, "
                    f"expected {(n, self.n_state)}"
                )
            return out
        return dist.sample(n, gen, self._context(), p)

    def _context(self) -> Context:
        return Context(tuple(self.state_names), tuple(self.parameters), self._named_states)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_lagrangian(
        cls,
        lagrangian: sympy.Expr,
        coordinates: Sequence[sympy.Symbol | sympy.Function],
        parameters: Mapping[SymbolLike, float] | Sequence[SymbolLike] = (),
        *,
        velocities: Sequence[sympy.Symbol] | None = None,
        time: SymbolLike | None = None,
        dissipation: sympy.Expr | None = None,
        forces: Mapping[SymbolLike, sympy.Expr] | Sequence[sympy.Expr] | None = None,
        invariants: Mapping[str, sympy.Expr] | None = None,
        mass_matrix: str = "auto",
        **options: Any,
    ) -> System:
        """A system from its Lagrangian ``L(q, v, t)``, via the Euler-Lagrange equations.

        The state is ``[q_1..q_n, v_1..v_n]``. Accelerations solve ``M a = F`` with
        ``M = d2L/dv2``: symbolically when ``M`` is diagonal or has at most
        ``SYMBOLIC_SOLVE_MAX`` (3) rows, otherwise numerically per batch with
        ``torch.linalg.solve`` (``mass_matrix="auto"``; force one with ``"symbolic"`` or
        ``"numeric"``). Solved symbolically, a full ``M`` of up to three rows gives each
        acceleration over ``det M``, compacted (see ``docs/systems.md``).

        Parameters
        ----------
        lagrangian : sympy.Expr
            ``L`` in the coordinates and velocities.
        coordinates : sequence
            Symbols ``q``; or ``sympy.physics.mechanics.dynamicsymbols``, in which case
            ``q(t).diff(t)`` in ``L`` becomes the velocity symbol ``<q>_dot``.
        parameters : mapping of symbol (or name) to float
            Every other symbol, with its default value.
        velocities : sequence of sympy.Symbol, optional
            Velocity symbols; default ``Symbol("<q>_dot")`` for each coordinate.
        time : sympy.Symbol or str, optional
            The time symbol (default ``Symbol("t")``).
        dissipation : sympy.Expr, optional
            Rayleigh dissipation function ``R(q, v)`` (adds ``-dR/dv``).
        forces : mapping or sequence, optional
            Generalized forces ``Q_i`` per coordinate (may depend on time).
        invariants : mapping of str to sympy.Expr, optional
            Declared conserved quantities; energy is added automatically when ``L`` is
            time-independent and there is no dissipation or force.
        mass_matrix : {"auto", "symbolic", "numeric"}
            How the accelerations are solved.
        **options
            ``name``, ``description``, ``reference``, ``parameter_ranges``,
            ``initial_state_distribution`` (a table as in a specification file, or a callable
            ``(n, generator) -> (n, n_state)``), ``initial_states`` (name -> list of floats,
            or a mapping state -> float), ``characteristic_time``. These tables name a state by
            name or by symbol (a ``dynamicsymbols`` coordinate, or its derivative for its
            velocity).

        Returns
        -------
        System

        Raises
        ------
        physode.SystemDefinitionError
            Listing every problem: unknown symbols, parameters without value, time in an
            invariant, a singular mass matrix, ...

        Examples
        --------
        >>> import sympy
        >>> th, w, m, g, l = sympy.symbols("theta theta_dot m g l")
        >>> L = m * l**2 * w**2 / 2 + m * g * l * sympy.cos(th)
        >>> pend = System.from_lagrangian(L, [th], {m: 1.0, g: 9.81, l: 1.0})
        >>> pend.equations["theta_dot"]
        -g*sin(theta)/l
        """
        from physode.symbolic._forms import build_lagrangian  # which builds a System

        return _built(
            build_lagrangian, lagrangian, coordinates, parameters, velocities=velocities,
            time=time, dissipation=dissipation, forces=forces, invariants=invariants,
            mass_matrix=mass_matrix, **options,
        )

    @classmethod
    def from_hamiltonian(
        cls,
        hamiltonian: sympy.Expr,
        coordinates: Sequence[sympy.Symbol],
        momenta: Sequence[sympy.Symbol],
        parameters: Mapping[SymbolLike, float] | Sequence[SymbolLike] = (),
        *,
        time: SymbolLike | None = None,
        forces: Mapping[SymbolLike, sympy.Expr] | Sequence[sympy.Expr] | None = None,
        invariants: Mapping[str, sympy.Expr] | None = None,
        **options: Any,
    ) -> System:
        """A system from its Hamiltonian ``H(q, p, t)``: ``dq/dt = dH/dp``, ``dp/dt = -dH/dq``.

        The state is ``[q_1..q_n, p_1..p_n]``; ``H`` is the energy when it does not depend on
        time. ``separable`` is True when ``H = T(p) + V(q)``.

        Parameters
        ----------
        hamiltonian : sympy.Expr
        coordinates, momenta : sequence of sympy.Symbol
        parameters : mapping of symbol (or name) to float
        time : sympy.Symbol or str, optional
        forces : mapping or sequence, optional
            Generalized forces added to ``dp/dt``.
        invariants : mapping of str to sympy.Expr, optional
        **options
            As for :meth:`from_lagrangian`.

        Returns
        -------
        System

        Examples
        --------
        >>> import sympy
        >>> q, p, k, m = sympy.symbols("q p k m")
        >>> osc = System.from_hamiltonian(p**2 / (2 * m) + k * q**2 / 2, [q], [p], {k: 1, m: 2})
        >>> osc.equations
        {'q': p/m, 'p': -k*q}
        >>> osc.separable
        True
        """
        from physode.symbolic._forms import build_hamiltonian  # which builds a System

        return _built(
            build_hamiltonian, hamiltonian, coordinates, momenta, parameters, time=time,
            forces=forces, invariants=invariants, **options,
        )

    @classmethod
    def from_equations(
        cls,
        rhs: Mapping[SymbolLike, sympy.Expr],
        parameters: Mapping[SymbolLike, float] | Sequence[SymbolLike] = (),
        *,
        time: SymbolLike | None = None,
        invariants: Mapping[str, sympy.Expr] | None = None,
        n_coordinates: int | None = None,
        **options: Any,
    ) -> System:
        """A first-order system ``dy/dt = rhs(t, y)``, given as ``{state: expression}``.

        Parameters
        ----------
        rhs : mapping of symbol (or name) to sympy.Expr
            The states in order, each with its time derivative. A state may be a
            ``dynamicsymbols`` function ``q(t)``, as ``KanesMethod.rhs()`` writes them.
        parameters : mapping of symbol (or name) to float
        time : sympy.Symbol or str, optional
        invariants : mapping of str to sympy.Expr, optional
            Declared conserved quantities; one named ``"energy"`` is also :meth:`energy`.
        n_coordinates : int, optional
            When the state is ``[q (n), v (n)]``, set this to ``n`` so that the symplectic
            integrators can use the system if it separates.
        **options
            As for :meth:`from_lagrangian`.

        Returns
        -------
        System

        Examples
        --------
        >>> import sympy
        >>> x, y, mu = sympy.symbols("x y mu")
        >>> vdp = System.from_equations({x: y, y: mu * (1 - x**2) * y - x}, {mu: 1.0})
        >>> vdp.state_names
        ['x', 'y']
        """
        from physode.symbolic._forms import build_equations  # which builds a System

        return _built(
            build_equations, rhs, parameters, time=time, invariants=invariants,
            n_coordinates=n_coordinates, **options,
        )


def _built(build: Callable[..., System], *args: Any, **kwargs: Any) -> System:
    """The system ``build(problems, *args, **kwargs)`` derives, once every problem it found is
    raised (in one ``SystemDefinitionError``) and every SymPy constant it read where a parameter
    may have been meant is warned about: the end of each ``System.from_*`` constructor."""
    problems = Problems()
    system = build(problems, *args, **kwargs)
    problems.raise_if_any()
    warn_constants(system)
    return system


def _generator(seed: Any) -> torch.Generator:
    """A private generator seeded with ``seed``, which must be an int (not None, not 1.5) that
    torch's generator takes: from -2**63 to 2**64 - 1."""
    if not is_int(seed):
        raise InvalidArgumentError(
            f"seed must be an int (the same seed gives the same draws), got {seed!r}"
        )
    if not -(2**63) <= int(seed) < 2**64:
        raise InvalidArgumentError(
            f"seed={int(seed)} is out of range: a seed is an int from -2**63 to 2**64 - 1, "
            "e.g. seed % 2**64"
        )
    return torch.Generator().manual_seed(int(seed))


def _check_count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidArgumentError(f"n must be a non-negative int, got {n!r}")
    return n


def attach_spec_text(system: System, text: str) -> System:
    """``system``, recorded as derived from the specification ``text``.

    For the specification loader only (:func:`physode.symbolic.system_from_spec`): a system's
    ``spec_text`` is read-only and no constructor option sets it, so a data set never stores a
    specification other than the one its system was derived from.
    """
    system._spec_text = text
    return system
