// The colour theme: the system's preference ("auto"), or light or dark as chosen with the
// toggle and remembered. A classic script in <head>, so the page never flashes the wrong one.
(function () {
  const KEY = "hivemind-theme";
  const ORDER = ["auto", "dark", "light"];
  const root = document.documentElement;
  function stored() {
    try {
      return localStorage.getItem(KEY) || "auto";
    } catch {
      return "auto";
    }
  }
  function apply(theme) {
    if (theme === "auto") delete root.dataset.theme;
    else root.dataset.theme = theme;
    const button = document.getElementById("theme-toggle");
    if (button) {
      button.textContent = `Theme: ${theme}`;
      button.setAttribute("aria-label", `Colour theme: ${theme}; change`);
    }
  }
  apply(stored());
  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("theme-toggle");
    if (!button) return;
    apply(stored());
    button.addEventListener("click", () => {
      const next = ORDER[(ORDER.indexOf(stored()) + 1) % ORDER.length];
      try {
        localStorage.setItem(KEY, next);
      } catch {
        // Private mode: the choice lasts for this page only.
      }
      apply(next);
    });
  });
})();
