"""The physode catalogue: one TOML specification per physical system.

Shipped inside the wheel as the package ``physode._catalogue``.
"""
