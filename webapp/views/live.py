"""Live demo page: the Gradio demo (webapp/live.py), mounted at /gradio on the same port.

The iframe uses a same-origin path, so it works wherever ``app.py`` is served on
one port (locally, in Docker, on a Hugging Face Space). Run alone with
``streamlit run webapp/dashboard.py`` there is no Gradio server: start
``streamlit run app.py`` instead.
"""

from __future__ import annotations

import streamlit as st

GRADIO_PATH = "/gradio/"
HEIGHT_PX = 980


def main() -> None:
    st.title("Live demo")
    st.caption(f"Upload a photo or use the webcam. [Open the demo in its own tab]({GRADIO_PATH}) · "
               "this tab needs the combined server: `streamlit run app.py`.")
    st.iframe(GRADIO_PATH, height=HEIGHT_PX, alt="kpcore live keypoint demo (Gradio)")


main()
