"""Diameter Gy/Ro: the pure codec (``codec``) and its generated dictionary (``dictionary``), the peer state
machine, the credit-control application and the asyncio transport."""
