// A link's page (/j/… and /h/…): opening a link uses nothing up, posting its form
// redeems it (mail scanners and link previews open links, but do not post forms). Post
// at once, to the same path with the fragment ("#embed=…" from the embed SDK), which the
// redirect to /join then keeps. Without scripts, the person presses Continue.
const form = document.getElementById("open-link");
form.action = window.location.pathname + window.location.hash;
// One post only: a second would find the link used, and its answer would replace the
// first one's (the one with the session).
form.querySelector("button").disabled = true;
form.submit();
