from setuptools import Extension, setup

# The compiled decoder is optional: without a C compiler the install goes on
# and greenpipe decodes with the pure-Python version of the same code.
setup(
    ext_modules=[
        Extension(
            "greenpipe.trace._speedups",
            ["greenpipe/trace/_speedups.c"],
            optional=True,
        )
    ]
)
