"""The host link: authentication and replay protection, the UDP host link and the TCP push channel, edge and host side."""
