"""The operator's web page (``talkfactory web``): recordings, renders, avatars, uploads, live renders."""
