"""Live demo page: the Gradio demo (webapp/live.py), mounted at /gradio on the same port.

The iframe uses a same-origin path, so it works wherever ``app.py`` is served on
one port (locally, in Docker, on a Hugging Face Space). Same origin also lets
the demo grow its own iframe to its content's height (``FIT_FRAME_JS`` in
webapp/live.py), so every tab shows without a nested scroll bar; ``HEIGHT_PX`` is
only the height before that script runs. Run alone with
``streamlit run webapp/dashboard.py`` there is no Gradio server: start
``streamlit run app.py`` instead.
"""

from __future__ import annotations

import streamlit as st

GRADIO_PATH = "/gradio/"
HEIGHT_PX = 1400


def main() -> None:
    st.title("Live demo")
    st.markdown(f"Upload a photo or click an example. **[Open the demo full page]({GRADIO_PATH})** · "
                "this page needs the combined server: `streamlit run app.py`.")
    st.iframe(GRADIO_PATH, height=HEIGHT_PX, alt="kpcore live keypoint demo (Gradio)")


main()
