"""ecg_ray: distributed self-supervised representation learning on 12-lead ECG with Ray.

Data flows one way through the package: ``data.sources`` (dataset readers) ->
``data.signal`` (checks, resampling, lead order) -> ``data.store`` (zarr v3 corpus) ->
``data.stream`` (Ray Data crops and windows) -> training and evaluation.
"""

__version__ = "0.1.0"
