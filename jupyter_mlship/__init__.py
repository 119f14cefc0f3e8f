"""jupyter-mlship: ship a model from a notebook to a tested service."""

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:  # `%load_ext jupyter_mlship`
    from .magics import ShipMagics

    ipython.register_magics(ShipMagics)


from .server import _jupyter_labextension_paths, _jupyter_server_extension_points  # noqa: E402,F401
