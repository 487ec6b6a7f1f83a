"""`raedit app`: a local web page (Gradio) to sample from trained or imported models, reconstruct uploaded
images through an RAE, and compare two settings on the same seeds.

`catalog` finds the models and RAEs on disk, `actions` does the work without any web framework (so it is tested
directly), and `page` lays out the page and turns every failure into a message on it. Needs the `app` extra
(`pip install 'raedit[app]'`; `make install` includes it).
"""
