// The AEAD engines: see the files of this module.
