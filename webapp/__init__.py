"""kpcore's web front doors: the Streamlit dashboard and the Gradio live demo.

``app.py`` at the repository root serves both on one port; see its docstring.
"""
