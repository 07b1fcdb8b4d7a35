// Loaded last (all scripts are deferred, so the document is parsed): every page has
// registered itself; start the router and the live events.
"use strict";
window.SL.start();
