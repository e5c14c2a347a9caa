"""Views: plotly figures for the app (`plots`) and matplotlib figures for export (`export`)."""
