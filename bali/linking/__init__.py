"""Linking text to graph nodes: the link stage's methods (`bali.linking.methods`) and what they share."""
