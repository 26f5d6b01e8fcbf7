"""Command-line jobs run by operators and schedulers, outside the Streamlit app."""
