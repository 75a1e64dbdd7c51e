"""xenha: keep Xen domUs running when their dom0 dies (Nagios/Icinga plugins,
event handlers and a failover engine)."""

__version__ = '0.1.0'
