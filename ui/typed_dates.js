/* Typed dates reach the server on Enter and on Tab, not only when the mouse moves focus elsewhere (issue 11).

Streamlit's date field (React Aria segments inside [data-testid="stDateInputField"]) commits a typed date only when
focus moves to an element outside the field and outside its calendar pop-up. Enter does nothing; Tab from the last
segment lands on the field's own calendar button, which is inside the field; and a plain blur() leaves no element
to move to, which the field ignores while its pop-up is open. So the page kept showing the old dates.

On Enter in a segment, or Tab from the last one, this moves focus to an invisible element outside the field, which
runs Streamlit's own commit (its validation and its message for a date out of range included), then on to the
calendar button, where Tab would have gone. Shift+Tab and moves between segments keep their usual behaviour.
Loaded on every run of a page with dates; it installs itself once per browser tab. */
(() => {
  if (window.__dataconnTypedDates) return;
  window.__dataconnTypedDates = true;
  const FIELD = '[data-testid="stDateInputField"]';
  const SEGMENT = '[role="spinbutton"]';
  const CALENDAR_BUTTON = '[data-testid="stDateInputCalendarButton"]';

  const sink = document.createElement("span");
  sink.tabIndex = -1;
  sink.setAttribute("aria-hidden", "true");
  sink.style.cssText = "position:fixed;top:0;left:0;width:1px;height:1px;overflow:hidden;opacity:0;";
  document.body.appendChild(sink);

  document.addEventListener(
    "keydown",
    (event) => {
      if (event.isComposing || event.altKey || event.ctrlKey || event.metaKey) return;
      if (event.key !== "Enter" && event.key !== "Tab") return;
      const segment = event.target instanceof Element ? event.target.closest(SEGMENT) : null;
      const field = segment ? segment.closest(FIELD) : null;
      if (!field) return;
      if (event.key === "Tab") {
        const segments = field.querySelectorAll(SEGMENT);
        if (event.shiftKey || segment !== segments[segments.length - 1]) return;
      }
      event.preventDefault();
      event.stopPropagation();
      sink.focus({ preventScroll: true }); // focus leaves the field: it commits
      const button = field.querySelector(CALENDAR_BUTTON);
      if (button) button.focus({ preventScroll: true });
    },
    true,
  );
})();
