// Runs before first paint (loaded without defer): applies a stored theme choice so the page
// does not flash in the other theme. With no choice stored the page follows the system.
(function () {
  try {
    var t = localStorage.getItem("sensorlake.theme");
    if (t === "dark" || t === "light") document.documentElement.dataset.theme = t;
  } catch (e) { /* storage blocked: follow the system */ }
})();
