"""The MedM2G components: autoencoders, denoisers, encoders, context encoders and the container."""
