"""The sidebar: the checkpoint (bundled, uploaded or, on a local install, a server path), tau, the
threshold, Gumbel noise and the number of evaluation images, all mirrored into the URL.

Environment: DRNET_EVAL_LIMIT sets the default number of evaluation images (by default the whole set);
DRNET_ALLOW_SERVER_PATHS=1 allows a checkpoint path on the server; DRNET_UPLOAD_DIR (shared by replicas),
DRNET_UPLOAD_MAX_FILES and DRNET_UPLOAD_MAX_MB place and bound the uploaded checkpoints kept on disk
(`drnet_app.upload_store`).
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from drnet_core.net.checkpoint import BUNDLED_CHECKPOINTS, SHIPPED_CHECKPOINT, CheckpointError, sha256_of
from drnet_core.defaults import TAU_MAX, TAU_MIN
from drnet_core.analysis.evaluate import default_setting
from drnet_core.data.datasets import FASHION_CLASSES
from drnet_app.caches import bundled_sha256, evaluation_set, model_and_meta, upload_store
from drnet_app.upload_store import DIGEST, UploadTooLarge
from drnet_app.state import Checkpoint, Settings, bound, publish

EVAL_LIMIT_ENV = "DRNET_EVAL_LIMIT"
SERVER_PATHS_ENV = "DRNET_ALLOW_SERVER_PATHS"
UPLOAD_SOURCE = "Upload a file"
CHECKPOINT_PARAM = "checkpoint"  # ?checkpoint=<bundled name> or <sha256 of an uploaded file>


# ---- checkpoint choice ----------------------------------------------------------------------------

def _uploaded_checkpoint() -> Checkpoint | None:
    """The checkpoint uploaded now, or the one this session (or its link) uploaded before, if still stored."""
    upload = st.file_uploader("DRNet checkpoint (.pt)", key="checkpoint_upload")
    # Stored once per uploaded file rather than on every rerun while the uploader holds it; again only if
    # other sessions' uploads have evicted it meanwhile.
    stored = (upload is not None and st.session_state.get("_uploaded_file_id") == upload.file_id
              and upload_store().path_for(st.session_state["_uploaded_sha"]) is not None)
    if upload is not None and not stored:
        path = upload_store().put(upload.getvalue())
        st.session_state["_uploaded_sha"] = path.stem
        st.session_state["_uploaded_name"] = upload.name
        st.session_state["_uploaded_file_id"] = upload.file_id
    digest = st.session_state.get("_uploaded_sha")
    if not digest:
        st.query_params.pop(CHECKPOINT_PARAM, None)
        return None
    if not DIGEST.fullmatch(digest):
        st.warning(f"The link names the checkpoint {digest[:80]!r}, which is neither a bundled checkpoint nor "
                   "an upload's sha256.")
        return None
    st.query_params[CHECKPOINT_PARAM] = digest
    path = upload_store().path_for(digest)
    if path is None:
        st.warning(f"The uploaded checkpoint {digest[:12]}… is no longer on this server (it keeps the "
                   f"{upload_store().max_files} most recent uploads). Upload the file again to use it.")
        return None
    name = st.session_state.get("_uploaded_name") or f"upload {digest[:12]}…"
    if upload is None:
        st.caption(f"Using the uploaded checkpoint `{name}` (sha256 {digest[:12]}…).")
    return Checkpoint(str(path), digest, name)


def _checkpoint_from_url(bundled: list[str]) -> None:
    """Seed the checkpoint choice from `?checkpoint=`: a bundled checkpoint's name or an upload's sha256."""
    if "checkpoint_source" in st.session_state:
        return
    wanted = st.query_params.get(CHECKPOINT_PARAM, "")
    if wanted in bundled:
        st.session_state["checkpoint_source"] = wanted
    elif wanted:
        st.session_state["checkpoint_source"] = UPLOAD_SOURCE
        st.session_state["_uploaded_sha"] = wanted


def checkpoint_choice() -> Checkpoint:
    """The checkpoint to use; errors fall back to the shipped one.

    The choice is in the URL: a bundled checkpoint by name, an uploaded one by sha256 (restored from the
    upload store while it is still there).
    """
    shipped = Checkpoint(str(SHIPPED_CHECKPOINT), bundled_sha256(str(SHIPPED_CHECKPOINT)),
                         SHIPPED_CHECKPOINT.name)
    with st.sidebar.expander("Checkpoint", expanded=False):
        # Reading arbitrary server paths is for a local install only: anyone reaching a shared app could
        # otherwise make the server open any file it can read.
        bundled = [label for label, path in BUNDLED_CHECKPOINTS.items() if path.is_file()]
        sources = bundled + [UPLOAD_SOURCE] + (["Path on the server"] if os.environ.get(SERVER_PATHS_ENV) == "1" else [])
        _checkpoint_from_url(bundled)
        source = st.radio("Model", sources, key="checkpoint_source", horizontal=False,
                          help="The shipped DRNet has no pooling branches; its parent has them and routes more "
                               "diversely, at a lower speed (docs/MODEL.md).")
        chosen = None
        try:
            if source in bundled:
                path = BUNDLED_CHECKPOINTS[source]
                chosen = Checkpoint(str(path), bundled_sha256(str(path)), path.name)
                st.query_params[CHECKPOINT_PARAM] = source
            elif source == UPLOAD_SOURCE:
                chosen = _uploaded_checkpoint()
            elif source == "Path on the server":
                st.query_params.pop(CHECKPOINT_PARAM, None)  # a server path is never put in a shareable link
                text = st.text_input("Checkpoint path", key="checkpoint_path", placeholder="runs/fashion/best.pt")
                if text.strip():
                    path = Path(text.strip()).expanduser()
                    if not path.is_file():
                        raise CheckpointError(f"{path}: no such checkpoint file.")
                    chosen = Checkpoint(str(path.resolve()), sha256_of(path), path.name)
            if chosen is not None:
                model_and_meta(chosen)  # validate now, so a bad file never reaches a page
                return chosen
        except (CheckpointError, UploadTooLarge) as error:
            st.error(f"{error} Using the shipped checkpoint instead.")
        except OSError as error:
            st.error(f"Could not read the checkpoint: {error}. Using the shipped checkpoint instead.")
    return shipped


# ---- the sidebar --------------------------------------------------------------------------------------

def sidebar() -> Settings:
    """Draw the global settings and return them; their values are mirrored into the URL."""
    st.sidebar.title("DRNet Explorer")
    checkpoint = checkpoint_choice()
    model, meta = model_and_meta(checkpoint)
    images = evaluation_set()
    default_limit = int(os.environ.get(EVAL_LIMIT_ENV) or len(images))
    default_limit = max(1, min(default_limit, len(images)))
    default_tau, default_threshold = default_setting(meta)
    # Another checkpoint was chosen: its own default setting replaces the last one's (sliders are drawn
    # below, so their state can still be set in this run). The first run keeps what the URL says.
    if st.session_state.get("_defaults_of", checkpoint.sha256) != checkpoint.sha256:
        st.session_state["tau"], st.session_state["threshold"] = default_tau, default_threshold
    st.session_state["_defaults_of"] = checkpoint.sha256

    st.sidebar.subheader("Routing")
    st.sidebar.slider("Gumbel temperature tau", TAU_MIN, TAU_MAX, step=0.05, key=bound("tau", default_tau, low=TAU_MIN, high=TAU_MAX),
                      help="softmax((logits + noise) / tau): low tau sharpens the branch weights, high tau flattens them.")
    st.sidebar.slider("Selection threshold", 0.0, 1.0, step=0.01,
                      key=bound("threshold", default_threshold, low=0.0, high=1.0),
                      help="A branch runs iff its weight is at least this. 0 runs every branch (the dense network).")
    noise = st.sidebar.toggle("Gumbel noise", key=bound("noise", False),
                              help="Add seeded Gumbel noise to the router logits, as in training.")
    st.sidebar.number_input("Noise seed", 0, 2**31 - 1, step=1, key=bound("seed", 0, low=0, high=2**31 - 1),
                            disabled=not noise)
    st.sidebar.number_input(f"Evaluation images (first N of {len(images):,})", 1, len(images), step=500,
                            key=bound("n", default_limit, low=1, high=len(images)),
                            help="Fewer images answer faster; the full set gives the real figures.")
    publish("tau", "threshold", "noise", "seed", "n")

    settings = Settings(checkpoint=checkpoint, class_names=tuple(meta.get("class_names", FASHION_CLASSES)),
                        tau=float(st.session_state["tau"]), threshold=float(st.session_state["threshold"]),
                        noise=bool(st.session_state["noise"]), seed=int(st.session_state["seed"]),
                        eval_limit=int(st.session_state["n"]), dataset_name=images.name)

    st.sidebar.subheader("Model")
    device = str(model.device).upper() if model.device.type == "cuda" else "CPU"
    st.sidebar.markdown(f"**Checkpoint:** `{checkpoint.name}`  \n**Device:** {device}")
    test = meta.get("test_default") or {}
    if "accuracy" in test:
        st.sidebar.markdown(f"**Test accuracy:** {test['accuracy']:.1%} at tau {test.get('tau', default_tau):g}, "
                            f"threshold {test.get('threshold', default_threshold):g}  \n"
                            f"<small>{test.get('dataset', '')}</small>", unsafe_allow_html=True)
    else:
        st.sidebar.markdown("**Test accuracy:** not recorded in this checkpoint")
    shown = images.subset(settings.eval_limit).name
    st.sidebar.markdown(f"**Evaluating on:** {shown}")
    return settings
