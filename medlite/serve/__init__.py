"""``medlite serve``: a local web page where a clinician opens an image, draws a box (or clicks, or
scribbles) and gets the mask, on their own machine.

- :mod:`medlite.serve.app`: the FastAPI application (torch-free: the exported ONNX graphs on ONNX Runtime,
  images read from memory, nothing written to disk);
- :mod:`medlite.serve.models`: turns zoo names, checkpoints and run folders into those ONNX graphs once,
  in a cache folder (this step needs PyTorch; an ONNX folder or file is served as it is);
- ``static/``: the page (plain HTML, CSS and JavaScript, no build step, no network requests but its own).
"""
