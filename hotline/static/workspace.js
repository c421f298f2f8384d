// The workspace's htmx forms (notes, tags, the transcript): htmx drops an error response
// without a word. The app's own refusals and failures name where they go (HX-Retarget, set by
// hotline.workspace.private): show those. Any other error (a proxy's 502, a failed poll) is
// still dropped, so no part of the page is emptied and polling goes on.
document.addEventListener("htmx:beforeSwap", function (event) {
  if (event.detail.isError && event.detail.xhr.getResponseHeader("HX-Retarget")) {
    event.detail.shouldSwap = true;
  }
});
