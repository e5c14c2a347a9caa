"""Streamlit panels of app.py (share, sweep, export, mixture editor, training); toydiff never imports them."""
