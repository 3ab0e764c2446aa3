"""placeholder replaced below"""
def register(app):
    pass
