"""The method atlas tab: every guidance method in one table, each row linking to a scene that shows
it (toydiff.atlas builds the table; this file only draws it)."""

from __future__ import annotations

import streamlit as st

from toydiff import atlas


@st.cache_data(show_spinner=False)
def _table(base_url: str) -> str:
    return atlas.table(base_url)


def atlas_ui(base_url: str = "") -> None:
    """Draws the atlas: a caption and the Markdown table (links open the scene in the two columns)."""
    st.caption(
        "Every method in toydiff: whether it needs a conditional model, what it needs trained "
        "beyond one, which prediction it steers away from, its formula (MATH.md §3) and where it "
        "runs. 'open' loads a scene with no guidance on the left and the method on the right."
    )
    st.markdown(_table(base_url))
