"""QuickDraw Mobile: Quick, Draw! doodles to a phone-ready classifier."""

__version__ = "0.1.0"
