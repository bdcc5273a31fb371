"""``qnr info``: versions, devices and the teacher's zero-predictor error."""

from __future__ import annotations

from qnr.cli._args import add_delta_flag, real
from qnr.cli._common import add_common_flags, setup_precision


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, devices, and a teacher's Q0")
    add_common_flags(p)
    p.add_argument("--teacher", default="mp", choices=["mp", "power-law"])
    p.add_argument(
        "--kappa-star", type=real("kappa_star", gt=0), default=0.5, help="teacher width ratio"
    )
    p.add_argument("--gamma", type=real("gamma", ge=0), default=1.0, help="power-law exponent")
    add_delta_flag(p)
    p.set_defaults(func=run)


def run(args) -> dict:
    setup_precision(args)
    import jax

    from qnr import __version__
    from qnr.model import e_test_from_error
    from qnr.teachers import teacher_from_name

    teacher = teacher_from_name(args.teacher, kappa_star=args.kappa_star, gamma=args.gamma)
    q0 = float(teacher.Q0)
    return {
        "qnr": __version__,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(dev) for dev in jax.devices()],
        "teacher": args.teacher,
        "Q0": q0,
        "e_test_zero_predictor": float(e_test_from_error(q0, args.delta)),
    }
