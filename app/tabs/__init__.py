"""The page's tabs, one module each: its callbacks (a subclass of :class:`app.tabs.base.AppBase`)
and a ``build_*_tab`` function that lays out its components and wires its events.

train (Train live, 2-D), flowmap_vs_ode (Flow map vs ODE), quality (Steps vs quality), images
(Images), race (Race the families). app/ui.py assembles them.
"""
