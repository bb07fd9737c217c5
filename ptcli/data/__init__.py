"""Data: the one record reader, data sources as plug-ins, packing, the token cache and the DataLoader."""
