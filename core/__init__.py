"""Energy Data Connections core: everything except the UI. Importable without Streamlit."""
