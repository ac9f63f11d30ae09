// A link's page (/j/… and /h/…): opening a link uses nothing up, posting its form
// redeems it (mail scanners and link previews open links, but do not post forms). The
// form posts to the same path with the fragment ("#embed=…" from the embed SDK), which
// the redirect to /join then keeps. Without scripts, the button posts it all the same.
const form = document.getElementById("open-link");
const button = form.querySelector("button");
form.action = window.location.pathname + window.location.hash;
// One post only: a second would find the link used, and its answer would replace the
// first one's (the one with the session).
form.addEventListener("submit", (event) => {
  if (button.disabled) {
    event.preventDefault();
    return;
  }
  button.disabled = true;
});
// At top level the person presses the button: scanners that render links in a browser,
// scripts and all (Safe Links detonation), would otherwise use the link up. In a
// platform's frame (the embed SDK) post at once: scanners do not open links there.
if (window.self !== window.top) {
  button.disabled = true;
  form.submit();
}
