"""Butcher tableaus of the explicit Runge-Kutta methods, written once as data and checked."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["ButcherTableau", "TABLEAUS"]


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta method as printed in its paper.

    Parameters
    ----------
    name : str
        The method's name, as accepted by ``method=``.
    order : int
        Order of the propagated solution ``b``.
    c : tuple of float
        Nodes, one per stage; ``c[0] == 0``.
    a : tuple of tuple of float
        Strictly lower-triangular coupling, row ``i`` holding ``a[i][0..i-1]`` (row 0 is empty).
    b : tuple of float
        Weights of the propagated solution.
    b_error : tuple of float, optional
        Weights of the error estimate ``b - b_low`` (length ``len(c)``); absent for fixed-step
        methods.
    error_order : int, optional
        Order of the embedded solution, which sets the step-size controller's exponent.
    fsal : bool
        First same as last: the last stage is ``f(t + h, y1)``, reused as the next step's first.
    dense : tuple of tuple of float, optional
        Dense-output polynomials:
        ``y(t + theta h) = y + h * sum_i k_i * sum_j dense[i][j] theta**(j+1)``.
        Absent where the method has no continuous extension here; the solver then steps onto
        every output time instead.
    b_error_low : tuple of float, optional
        A second, lower-order error estimate combined with ``b_error`` as in Hairer's DOP853.
    dense_stages : tuple of (float, tuple of float), optional
        Stages that only the continuous extension needs, as ``(c, a_row)``, evaluated after an
        accepted step. Stage ``len(c)`` is then ``f(t + h, y1)`` (the next step's first stage) and
        these follow it, each row of ``a`` covering every stage before it; ``dense`` has a row
        for every stage, those included. The shared loop uses only dense outputs without such
        stages (``RungeKutta.has_dense``); the per-sample loop uses both.

    Raises
    ------
    ValueError
        If the tableau is inconsistent: rows of ``a`` that do not sum to ``c``, weights that do not
        sum to one, error weights that do not sum to zero, or ragged shapes.
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...] | None = None
    error_order: int | None = None
    fsal: bool = False
    dense: tuple[tuple[float, ...], ...] | None = None
    b_error_low: tuple[float, ...] | None = None
    dense_stages: tuple[tuple[float, tuple[float, ...]], ...] | None = None
    stages: int = field(init=False)

    def __post_init__(self) -> None:
        s = len(self.c)
        object.__setattr__(self, "stages", s)
        problems = []
        if len(self.a) != s or len(self.b) != s:
            problems.append(f"len(a)={len(self.a)} and len(b)={len(self.b)} must equal len(c)={s}")
        for i, row in enumerate(self.a):
            if len(row) != i:
                problems.append(f"row {i} of a has {len(row)} entries, expected {i}")
            elif i > 0 and not math.isclose(sum(row), self.c[i], rel_tol=1e-12, abs_tol=1e-12):
                problems.append(f"row {i} of a sums to {sum(row)!r}, not c[{i}]={self.c[i]!r}")
        if not math.isclose(sum(self.b), 1.0, rel_tol=1e-12):
            problems.append(f"weights b sum to {sum(self.b)!r}, not 1")
        for label, weights in (("b_error", self.b_error), ("b_error_low", self.b_error_low)):
            if weights is None:
                continue
            if len(weights) != s:
                problems.append(f"{label} has {len(weights)} entries, expected {s}")
            if abs(sum(weights)) > 1e-12:
                problems.append(f"{label} sums to {sum(weights)!r}, not 0")
        if (self.b_error is None) != (self.error_order is None):
            problems.append("b_error and error_order must be given together")
        if self.fsal and (
            not math.isclose(self.c[-1], 1.0) or tuple(self.a[-1]) != tuple(self.b[:-1])
        ):
            problems.append("fsal needs c[-1] == 1 and the last row of a equal to b")
        extra = self.dense_stages or ()
        if extra and self.fsal:
            problems.append("dense_stages follow f(t + h, y1), which an FSAL method has already")
        for j, (c, row) in enumerate(extra):
            if len(row) != s + 1 + j:
                problems.append(f"dense stage {j} has {len(row)} entries, expected {s + 1 + j}")
            elif not math.isclose(sum(row), c, rel_tol=1e-12, abs_tol=1e-12):
                problems.append(f"dense stage {j} sums to {sum(row)!r}, not its c={c!r}")
        if self.dense is not None:
            n_dense = s + (1 + len(extra) if extra else 0)
            if len(self.dense) != n_dense:
                problems.append(f"dense has {len(self.dense)} rows, expected {n_dense}")
            else:
                # At theta = 1 the continuous extension must reproduce the step's end point.
                b = self.b + (0.0,) * (n_dense - s)
                for i, poly in enumerate(self.dense):
                    if not math.isclose(sum(poly), b[i], rel_tol=1e-9, abs_tol=1e-12):
                        problems.append(f"dense row {i} sums to {sum(poly)!r}, not b[{i}]={b[i]!r}")
        elif extra:
            problems.append("dense_stages need dense")
        if problems:
            raise ValueError(f"inconsistent tableau {self.name!r}: " + "; ".join(problems))

    @property
    def adaptive(self) -> bool:
        """Whether the method carries an error estimate for step-size control."""
        return self.b_error is not None

    def dense_weights(self, theta: float) -> list[float]:
        """Weights ``w_i`` with ``y(t + theta h) = y + h * sum_i w_i k_i``."""
        if self.dense is None:
            raise ValueError(f"method {self.name!r} has no dense output")
        # Each power of theta once for all rows (the same numbers as raising theta for every
        # term: a solve with dense output calls this at every output time).
        powers = [theta ** (j + 1) for j in range(max(map(len, self.dense)))]
        weights = []
        for poly in self.dense:
            w = 0  # summed in the polynomial's order, as sum() would
            for p, power in zip(poly, powers):
                w += p * power
            weights.append(w)
        return weights


def _difference(x: tuple[float, ...], y: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(p - q for p, q in zip(x, y, strict=True))


def _hairer_extension(
    b: tuple[float, ...], d: tuple[tuple[float, ...], ...]
) -> tuple[tuple[float, ...], ...]:
    """DOP853's continuous extension as ``dense`` rows.

    Hairer writes it ``y + s (r0 + s' (r1 + s (r2 + s' (r3 + s (r4 + s' (r5 + s r6))))))`` with
    ``s' = 1 - s``, ``r0 = y1 - y``, ``r1 = h k1 - r0``, ``r2 = r0 - h k13 - r1`` and ``r3..r6``
    ``h`` times the combinations ``d`` of the stages. Each ``r`` is ``h`` times a combination of
    the stages, so a stage's weight is the same nest of its coefficients in them, multiplied out
    here into powers of ``s``.
    """
    rows = []
    for i in range(len(d[0])):
        bi = b[i] if i < len(b) else 0.0
        first, end = float(i == 0), float(i == len(b))  # k1, and k13 = f(t + h, y1)
        nest = (bi, first - bi, 2.0 * bi - first - end, *(row[i] for row in d))
        poly = [nest[-1]]  # coefficients of 1, s, s**2, ...
        for j in range(len(nest) - 2, -1, -1):
            times_s = [0.0, *poly]
            # times s where j is odd, times 1 - s where it is even, then plus nest[j]
            poly = times_s if j % 2 else [p - q for p, q in zip([*poly, 0.0], times_s)]
            poly[0] += nest[j]
        rows.append(tuple(poly))  # times s: poly's coefficients are those of s, s**2, ...
    return tuple(rows)


EULER = ButcherTableau(name="euler", order=1, c=(0.0,), a=((),), b=(1.0,))

MIDPOINT = ButcherTableau(name="midpoint", order=2, c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))

RK4 = ButcherTableau(
    name="rk4",
    order=4,
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
)

# Heun's method with Euler embedded: order 2(1).
HEUN = ButcherTableau(
    name="heun",
    order=2,
    c=(0.0, 1.0),
    a=((), (1.0,)),
    b=(0.5, 0.5),
    b_error=_difference((0.5, 0.5), (1.0, 0.0)),
    error_order=1,
)

# Bogacki & Shampine (1989), order 3(2), FSAL; the dense output is the cubic Hermite interpolant.
_BOSH3_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
BOSH3 = ButcherTableau(
    name="bosh3",
    order=3,
    c=(0.0, 0.5, 0.75, 1.0),
    a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
    b=_BOSH3_B,
    b_error=_difference(_BOSH3_B, (7 / 24, 1 / 4, 1 / 3, 1 / 8)),
    error_order=2,
    fsal=True,
    dense=(
        (1.0, -4 / 3, 5 / 9),
        (0.0, 1.0, -2 / 3),
        (0.0, 4 / 3, -8 / 9),
        (0.0, -1.0, 1.0),
    ),
)

# Dormand & Prince (1980), order 5(4), FSAL, with Shampine's (1986) quartic continuous extension.
_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
DOPRI5 = ButcherTableau(
    name="dopri5",
    order=5,
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DOPRI5_B[:-1],
    ),
    b=_DOPRI5_B,
    b_error=_difference(
        _DOPRI5_B, (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
    ),
    error_order=4,
    fsal=True,
    dense=(
        (1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432),
        (0.0, 0.0, 0.0, 0.0),
        (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799),
        (0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072),
        (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632),
        (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
        (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423),
    ),
)

# Tsitouras (2011), order 5(4), FSAL, with the paper's free quartic continuous extension (no
# evaluation beyond the step's seven stages, the seventh being the FSAL f(t + h, y1)). The paper
# prints each b_i(theta) factored; the rows below are those products multiplied out.
_TSIT5_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
)
TSIT5 = ButcherTableau(
    name="tsit5",
    order=5,
    c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=(
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.028269050394068383,
        ),
        _TSIT5_B[:-1],
    ),
    b=_TSIT5_B,
    b_error=(
        -0.00178001105222577714,
        -0.0008164344596567469,
        0.007880878010261995,
        -0.1447110071732629,
        0.5823571654525552,
        -0.45808210592918697,
        1 / 66,
    ),
    error_order=4,
    fsal=True,
    dense=(
        (1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216),
        (0.0, 0.13169999999999998, -0.2234, 0.1017),
        (0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253),
        (0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902),
        (0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928),
        (0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661),
        (0.0, 1.5, -4.0, 2.5),
    ),
)

_DOP853_B = (
    0.054293734116568765,
    0.0,
    0.0,
    0.0,
    0.0,
    4.450312892752409,
    1.8915178993145003,
    -5.801203960010585,
    0.3111643669578199,
    -0.1521609496625161,
    0.20136540080403034,
    0.04471061572777259,
)
# DOP853's continuous extension of order 7 (Hairer, Norsett & Wanner, Solving ODEs I, II.6 and
# the code DOP853): three stages past k13 = f(t + h, y1), at c = 0.1, 0.2 and 7/9, ...
_DOP853_DENSE_STAGES = (
    (
        0.1,
        (
            5.61675022830479523392909219681e-2, 0.0, 0.0, 0.0, 0.0, 0.0,
            2.53500210216624811088794765333e-1, -2.46239037470802489917441475441e-1,
            -1.24191423263816360469010140626e-1, 1.5329179827876569731206322685e-1,
            8.20105229563468988491666602057e-3, 7.56789766054569976138603589584e-3, -8.298e-3,
        ),
    ),
    (
        0.2,
        (
            3.18346481635021405060768473261e-2, 0.0, 0.0, 0.0, 0.0,
            2.83009096723667755288322961402e-2, 5.35419883074385676223797384372e-2,
            -5.49237485713909884646569340306e-2, 0.0, 0.0,
            -1.08347328697249322858509316994e-4, 3.82571090835658412954920192323e-4,
            -3.40465008687404560802977114492e-4, 1.41312443674632500278074618366e-1,
        ),
    ),
    (
        7 / 9,
        (
            -4.28896301583791923408573538692e-1, 0.0, 0.0, 0.0, 0.0,
            -4.69762141536116384314449447206e0, 7.68342119606259904184240953878e0,
            4.06898981839711007970213554331e0, 3.56727187455281109270669543021e-1, 0.0, 0.0, 0.0,
            -1.39902416515901462129418009734e-3, 2.9475147891527723389556272149e0,
            -9.15095847217987001081870187138e0,
        ),
    ),
)  # fmt: skip
# ... and the four combinations d of all 16 stages that the extension's nest adds (see
# _hairer_extension).
_DOP853_D = (
    (
        -8.4289382761090128651353491142,
        0.0,
        0.0,
        0.0,
        0.0,
        0.5667149535193777696253178359,
        -3.0689499459498916912797304727,
        2.384667656512069828772814968,
        2.1170345824450282767155149946,
        -0.8713915837779729920678990749,
        2.240437430260788275854177165,
        0.6315787787694688181557024929,
        -0.0889903364513333108206981174,
        18.148505520854727256656404962,
        -9.1946323924783554000451984436,
        -4.4360363875948939664310572,
    ),
    (
        10.427508642579134603413151009,
        0.0,
        0.0,
        0.0,
        0.0,
        242.28349177525818288430175319,
        165.20045171727028198505394887,
        -374.54675472269020279518312152,
        -22.113666853125306036270938578,
        7.7334326684722638389603898808,
        -30.674084731089398182061213626,
        -9.3321305264302278729567221706,
        15.697238121770843886131091075,
        -31.139403219565177677282850411,
        -9.3529243588444783865713862664,
        35.81684148639408375246589854,
    ),
    (
        19.985053242002433820987653617,
        0.0,
        0.0,
        0.0,
        0.0,
        -387.03730874935176555105901742,
        -189.17813819516756882830838328,
        527.80815920542364900561016686,
        -11.573902539959630126141871134,
        6.8812326946963000169666922661,
        -1.000605096691083840318386098,
        0.7777137798053443209286926574,
        -2.7782057523535084065932004339,
        -60.196695231264120758267380846,
        84.320405506677161018159903784,
        11.99229113618278932803513003,
    ),
    (
        -25.693933462703749003312586129,
        0.0,
        0.0,
        0.0,
        0.0,
        -154.18974869023643374053993627,
        -231.52937917604549567536039109,
        357.6391179106141237828534991,
        93.405324183624310003907691704,
        -37.458323136451633156875139351,
        104.09964950896230045147246184,
        29.840293426660503123344363579,
        -43.533456590011143754432175058,
        96.3245539591882829483949506,
        -39.177261675615439165231486172,
        -149.72683625798562581422125276,
    ),
)

# Dormand & Prince (1981) order 8 with Hairer's 5th- and 3rd-order error estimators (DOP853).
DOP853 = ButcherTableau(
    name="dop853",
    order=8,
    c=(
        0.0,
        0.05260015195876773,
        0.0789002279381516,
        0.1183503419072274,
        0.2816496580927726,
        0.3333333333333333,
        0.25,
        0.3076923076923077,
        0.6512820512820513,
        0.6,
        0.8571428571428571,
        1.0,
    ),
    a=(
        (),
        (0.05260015195876773,),
        (0.0197250569845379, 0.0591751709536137),
        (0.02958758547680685, 0.0, 0.08876275643042054),
        (0.2413651341592667, 0.0, -0.8845494793282861, 0.924834003261792),
        (0.037037037037037035, 0.0, 0.0, 0.17082860872947386, 0.12546768756682242),
        (0.037109375, 0.0, 0.0, 0.17025221101954405, 0.06021653898045596, -0.017578125),
        (
            0.03709200011850479,
            0.0,
            0.0,
            0.17038392571223998,
            0.10726203044637328,
            -0.015319437748624402,
            0.008273789163814023,
        ),
        (
            0.6241109587160757,
            0.0,
            0.0,
            -3.3608926294469414,
            -0.868219346841726,
            27.59209969944671,
            20.154067550477894,
            -43.48988418106996,
        ),
        (
            0.47766253643826434,
            0.0,
            0.0,
            -2.4881146199716677,
            -0.590290826836843,
            21.230051448181193,
            15.279233632882423,
            -33.28821096898486,
            -0.020331201708508627,
        ),
        (
            -0.9371424300859873,
            0.0,
            0.0,
            5.186372428844064,
            1.0914373489967295,
            -8.149787010746927,
            -18.52006565999696,
            22.739487099350505,
            2.4936055526796523,
            -3.0467644718982196,
        ),
        (
            2.273310147516538,
            0.0,
            0.0,
            -10.53449546673725,
            -2.0008720582248625,
            -17.9589318631188,
            27.94888452941996,
            -2.8589982771350235,
            -8.87285693353063,
            12.360567175794303,
            0.6433927460157636,
        ),
    ),
    b=_DOP853_B,
    b_error=(
        0.01312004499419488,
        0.0,
        0.0,
        0.0,
        0.0,
        -1.2251564463762044,
        -0.4957589496572502,
        1.6643771824549864,
        -0.35032884874997366,
        0.3341791187130175,
        0.08192320648511571,
        -0.022355307863886294,
    ),
    # Hairer's 3rd-order estimator; combined with b_error in the error norm (see control.py).
    b_error_low=(
        -0.18980075407240762,
        0.0,
        0.0,
        0.0,
        0.0,
        4.450312892752409,
        1.8915178993145003,
        -5.801203960010585,
        -0.4226823213237919,
        -0.1521609496625161,
        0.20136540080403034,
        0.02265179219836082,
    ),
    error_order=7,
    dense_stages=_DOP853_DENSE_STAGES,
    dense=_hairer_extension(_DOP853_B, _DOP853_D),
)


TABLEAUS: dict[str, ButcherTableau] = {
    tab.name: tab for tab in (EULER, MIDPOINT, RK4, HEUN, BOSH3, DOPRI5, TSIT5, DOP853)
}
