# kpcore on a Hugging Face Docker Space (or any Docker host): the Streamlit
# dashboard at / and the Gradio live demo at /gradio/, both on port 7860.
#
#   docker build -t kpcore . && docker run --rm -p 7860:7860 kpcore
#
# Spaces run the container as user 1000 and forward the port named by
# `app_port` in the README front matter.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1

# libglib2.0-0: needed by opencv-python-headless (kpcore.data.geometry, kpcore.live.detect).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH
WORKDIR /home/user/app

# CPU-only torch first (the default PyPI wheels carry CUDA, gigabytes the Space
# cannot use); requirements.txt then finds torch/torchvision already satisfied.
COPY --chown=user requirements.txt .
RUN pip install --user --index-url https://download.pytorch.org/whl/cpu "torch>=2.14" "torchvision>=0.29" \
    && pip install --user -r requirements.txt

# Only what the apps need: no .venv, datasets, runs or caches from the build context.
COPY --chown=user kpcore ./kpcore
COPY --chown=user webapp ./webapp
COPY --chown=user checkpoints ./checkpoints
COPY --chown=user records ./records
COPY --chown=user benchmarks ./benchmarks
COPY --chown=user docs ./docs
COPY --chown=user .streamlit ./.streamlit
COPY --chown=user app.py pyproject.toml ./

# Fetched at build time: the IMM Face Database (research and education use) for the
# data explorer and the per-image pages. If the archive cannot be fetched the app
# still runs on the shipped records and thumbnails.
ENV KPCORE_DATA=/home/user/app/data
RUN python -m kpcore download imm --root "$KPCORE_DATA" \
    || echo "IMM not downloaded: the dashboard shows the shipped records only"

EXPOSE 7860
# XSRF protection off: a Space shows the app inside an iframe on huggingface.co,
# where the browser drops Streamlit's XSRF cookie and every st.file_uploader
# upload would fail with 403. It guards only Streamlit's upload endpoint, whose
# files are read in memory for the visitor's own session (README, "The app").
CMD ["streamlit", "run", "app.py", \
     "--server.port", "7860", "--server.address", "0.0.0.0", "--server.headless", "true", \
     "--server.enableXsrfProtection", "false", "--server.fileWatcherType", "none"]
